-- The dashboard's sign-in: a user's password hash (Argon2, from UserPasswordSet; NULL
-- while none is set) and when it was last set; users are found by name, any case.
ALTER TABLE users ADD COLUMN password_hash text;
ALTER TABLE users ADD COLUMN password_set_at timestamptz;
CREATE INDEX users_lower_name ON users (lower(name));
