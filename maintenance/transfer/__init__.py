"""Moving characters and their XP ledgers in and out as JSON Lines."""
