"""Following cells across frames so each one is counted once, and scoring that count against truth."""
