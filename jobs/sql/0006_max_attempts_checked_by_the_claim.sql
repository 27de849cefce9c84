-- max_attempts is no longer a CHECK constraint: PostgreSQL reads a CHECK's stored expression and
-- plans it again in every inserting statement, about 5 us of a single enqueue (2% of its rate,
-- measured against the durable-commit floor; README, "The single enqueue without its CTE"). Every
-- enqueue statement takes the value from a registered JobType, which refuses anything but NULL or
-- a positive number; a row that other SQL writes with max_attempts below 1 is marked dead by its
-- first claim, not run, with a last_error that names the value (queries._CLAIM_TEMPLATE).
ALTER TABLE {schema}.jobs DROP CONSTRAINT IF EXISTS jobs_max_attempts_check;
