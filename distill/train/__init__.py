"""Student training: SFT on TRL, chat templates, student recipes, tiny local models for tests and the demo."""
