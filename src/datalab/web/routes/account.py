"""Account: profile, git identity, language, API tokens (changes go through the JSON API)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from datalab.db import User
from datalab.http.views import token_out
from datalab.identity import accounts
from datalab.web.context import PageDep

router = APIRouter(include_in_schema=False)


@router.get("/account")
def account_page(page: PageDep) -> Response:
    principal = page.require()
    with page.platform.db.session() as session:
        user = session.get(User, principal.user_id)
        assert user is not None
        tokens = [token_out(t) for t in accounts.list_tokens(session, user)]
    return page.render("account.html", tokens=tokens)
