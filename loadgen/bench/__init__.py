"""`make bench`: the pipeline beside the raw-client ceiling, in one run on the same emulators."""
