"""The SFT mix: its options and declaration (`config.py`), the stage (`stage.py`)."""
