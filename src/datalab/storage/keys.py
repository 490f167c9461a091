"""Validation of bucket names and object keys given by users.

Every storage call names a bucket the caller may use (their personal project's and the one they
act in) and a key that cannot climb out of it (:func:`datalab.names.check_key`: the rules of
every stored name, secret paths included).
"""

from __future__ import annotations

from datalab.errors import Forbidden
from datalab.identity.access import Principal, may_use_space, spaces

# keys follow the rules of every stored name (secret paths too)
from datalab.names import check_key as check_key


def check_bucket(principal: Principal, bucket: str, personal_project: str) -> str:
    """The bucket, if the caller may use it (:func:`datalab.identity.access.spaces`): their
    personal project's, or the project they act in's."""
    if not may_use_space(principal, bucket, personal_project):
        raise Forbidden(
            f"bucket {bucket!r} is not yours: you can use "
            f"{', '.join(spaces(principal, personal_project))} "
            "(switch project with X-Datalab-Project or --project to use another project's)"
        )
    return bucket
