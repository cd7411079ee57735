"""MLflow models-from-code: each module here is logged as the code of a registered pyfunc model."""
