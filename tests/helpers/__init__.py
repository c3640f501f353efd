"""Test helpers: emulator resources, publishing, independent read-back, pipeline processes."""
