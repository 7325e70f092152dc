-- One Postgres for the whole stack: Prefect's database is created by the image (POSTGRES_DB);
-- MLflow and the Optuna studies get their own.
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
