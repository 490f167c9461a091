"""Request and response bodies shared by the routers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from datalab.answers import AdminServiceListed
from datalab.db import MAX_ROW_ID


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: a row id in a path (``/api/me/tokens/{token_id}``): larger ones can name no row
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Credentials(Model):
    username: str = Field(min_length=1, max_length=63)
    password: str = Field(min_length=1, max_length=1024)


class SignedIn(BaseModel):
    user: str = Field(description="The signed-in user's name.")
    csrf_token: str = Field(
        description="Send it as X-CSRF-Token with every state-changing request of this session."
    )


class TokenRequest(Credentials):
    token_name: str = Field("cli", min_length=1, max_length=100)
    ttl_days: int | None = Field(None, ge=1, le=3650)


class NewToken(Model):
    name: str = Field(min_length=1, max_length=100)
    ttl_days: int | None = Field(None, ge=1, le=3650)


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself. Shown once: store it now.")


class ProjectOut(BaseModel):
    id: str
    name: str
    personal: bool
    role: str | None = None
    members: list[dict[str, str]] | None = None


class UserOut(BaseModel):
    name: str
    email: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime


class MeOut(UserOut):
    git_name: str | None = Field(None, description="Name for git commits (default: user name).")
    git_email: str | None = Field(None, description="Email for git commits (default: email).")
    git_token_set: bool = Field(
        False, description="A git personal access token is saved (it is never shown back)."
    )
    lang: str = Field("en", description="Interface language: en or fr.")
    theme: str = Field(
        "system",
        description="Web UI colours: light, dark, or system (follows the browser). Services get "
        "user.darkMode: true for dark, and for system while the browser last reported a dark "
        "colour scheme (system_dark).",
    )
    system_dark: bool = Field(
        False, description="The colour scheme the browser last reported is dark."
    )
    project: str
    project_role: str
    projects: list[ProjectOut]
    csrf_token: str | None = Field(None, description="For web sessions: send as X-CSRF-Token.")


class ProfileUpdate(Model):
    """Fields of my profile to change; absent fields keep their value, "" clears one."""

    email: str | None = Field(None, max_length=254)
    git_name: str | None = Field(None, max_length=255)
    git_email: str | None = Field(None, max_length=254)
    git_token: str | None = Field(
        None,
        max_length=1024,
        description="Personal access token of your git forge, injected into your services as "
        'git.token (GIT_PERSONAL_ACCESS_TOKEN); write-only, "" removes it.',
    )
    lang: Literal["en", "fr"] | None = None
    theme: Literal["light", "dark", "system"] | None = None
    system_dark: bool | None = Field(
        None, description="Set by the web UI: the browser's prefers-color-scheme is dark."
    )


class NewUser(Model):
    name: str = Field(min_length=1, max_length=63)
    email: str | None = Field(None, max_length=254)
    password: str | None = Field(None, min_length=1, max_length=1024)
    is_admin: bool = False


class UserCreated(UserOut):
    password: str | None = Field(None, description="Generated password, shown once.")


class PasswordReset(Model):
    password: str | None = Field(None, max_length=1024)


class PasswordResetDone(BaseModel):
    user: str
    password: str | None = Field(
        description="The new password when the platform chose it (shown once); None when given."
    )


class Orphans(BaseModel):
    backend: str = Field(description="The execution backend (backend.name).")
    orphans: list[str] = Field(
        description="Ids of what it runs that the platform has no record of."
    )


class PasswordChange(Model):
    current: str = Field(max_length=1024)
    new: str = Field(max_length=1024)


class NewProject(Model):
    name: str = Field(min_length=1, max_length=63, description="RFC 1123 label, e.g. 'sandbox'")
    display_name: str = Field("", max_length=255)


class Member(Model):
    user: str = Field(min_length=1, max_length=63)
    role: str = "member"


class SavedConfigOut(BaseModel):
    id: int
    name: str
    project: str
    catalog: str
    chart: str
    version: str | None = Field(description="None: the latest at launch.")
    values: dict[str, Any] = Field(description="The overrides saved (secret fields dropped).")
    launcher_url: str = Field(description="The web launcher pre-filled with them.")
    updated_at: str = Field(description="When it was last saved (ISO 8601).")


class AllServices(BaseModel):
    services: list[AdminServiceListed] = Field(description="Oldest first.")
