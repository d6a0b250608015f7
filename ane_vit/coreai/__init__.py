"""Apple's Core AI stack for the book's models (chapter 10). ``optimize``: coreai-opt compression of the digits model."""
