"""Password hashes for ``interactive_web_users``: scrypt (default) or PBKDF2-SHA256, stdlib only.

A stored hash is self-describing, so its cost can be raised later without breaking old entries::

    scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>
    pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>

Make one with ``python -m interactive_celery.web.passwords`` (it prompts twice and prints the hash).
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import hmac
import os
import sys

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
MAX_SCRYPT_N = 2 ** 20  # keeps a hand-edited hash from asking for gigabytes of memory
DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = DKLEN) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * n * r + 1024 * 1024)


def hash_password(password: str) -> str:
    """A new scrypt hash of ``password`` with a random salt."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash_format(stored: str) -> str | None:
    """Why ``stored`` is not a hash we can verify, or None when it is."""
    if not isinstance(stored, str):
        return "must be a string"
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n < 2 or n & (n - 1) or n > MAX_SCRYPT_N or r < 1 or p < 1:
                return "has impossible scrypt parameters"
            base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
            return None
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if int(parts[1]) < 1:
                return "has an impossible iteration count"
            base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            return None
    except ValueError:
        return "is not a well-formed hash"
    return ("is not a password hash (expected scrypt$... or pbkdf2_sha256$...; "
            "make one with `python -m interactive_celery.web.passwords`)")


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; compares in constant time."""
    if check_hash_format(stored) is not None:
        return False
    parts = stored.split("$")
    if parts[0] == "scrypt":
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        if len(expected) < 16:
            return False
        actual = _scrypt(password, salt, n, r, p, len(expected))
    else:
        salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
        if len(expected) < 16:
            return False
        actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, int(parts[1]), len(expected))
    return hmac.compare_digest(actual, expected)


@functools.lru_cache(maxsize=1)
def dummy_hash() -> str:
    """Verified against when a user name is unknown, so a wrong name costs as long as a wrong password."""
    return hash_password(_b64(os.urandom(12)))


def main() -> int:
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        print("the passwords differ", file=sys.stderr)
        return 2
    if len(first) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(first))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
