-- Schema of the sample datasource: which upstream SMTP server checks each user.
CREATE TABLE IF NOT EXISTS auth_servers (
  username TEXT PRIMARY KEY,   -- the AUTH identity as the client types it
  host     TEXT NOT NULL       -- `host` or `host:port`
);
