-- A user's optional e-mail (UserCreated.email): people sign in with it or their name,
-- any case. Unique among users as the API checks it before creating one (as names are).
ALTER TABLE users ADD COLUMN email text;
CREATE INDEX users_lower_email ON users (lower(email));
