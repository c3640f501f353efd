"""Worker code: the pipeline and everything its transforms pickle and ship to the workers."""
