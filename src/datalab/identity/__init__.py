"""Who is calling: local accounts, API tokens, web sessions, projects, and the one place where
access to a resource is decided (:mod:`datalab.identity.access`)."""
