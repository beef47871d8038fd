"""API keys: creation, salted hashes, scopes, revocation, and a per-key rate limit."""

from ragstore.auth.keys import SCOPES, ApiKey, KeyStore, NewKey
from ragstore.auth.ratelimit import RateLimiter

__all__ = ["SCOPES", "ApiKey", "KeyStore", "NewKey", "RateLimiter"]
