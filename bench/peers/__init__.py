"""`make bench-peers`: kasp beside pgqueuer and procrastinate on the same PostgreSQL."""
