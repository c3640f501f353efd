"""Code that runs in the process launching the job: flags, runner choice, start-up checks."""
