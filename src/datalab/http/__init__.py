"""What the REST API (:mod:`datalab.api`) and the web UI (:mod:`datalab.web`) share, below both:
request dependencies (the platform, the database session, the caller, sign-in and out, the
stores), request and response models, database rows to response bodies, and error messages in
the caller's language. Neither the API nor the web UI imports the other."""
