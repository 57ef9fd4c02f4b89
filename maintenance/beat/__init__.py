"""Beat's side of scheduling: which beat leads, and which due times have been sent."""
