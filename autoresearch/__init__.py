"""autoresearch: the lab that drives, records and shows experiments."""
