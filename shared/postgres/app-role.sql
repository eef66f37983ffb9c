-- Run once, by the image's entrypoint, when the data volume is new (/docker-entrypoint-initdb.d),
-- as the superuser, in the database POSTGRES_DB (app). The app logs in as the role `app`: it
-- owns its database and what it creates there, and is no superuser (a superuser's SQL can read
-- the server's files and run programs in its container). psql reads the password from the
-- secret file itself (a backtick \set) and quotes it (:'...'): it is never in argv or this file.
\set app_password `cat /run/secrets/database_password`
CREATE ROLE app LOGIN PASSWORD :'app_password';
ALTER DATABASE app OWNER TO app;
