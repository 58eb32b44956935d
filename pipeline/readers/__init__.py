"""One reader per sheet format, each yielding `RawRow`s; `pipeline.sheet` picks one."""
