"""The secured local stack of ``sluice stack up --secure``: a second Kafka broker that speaks SASL_SSL
(SCRAM-SHA-512) and authorizes with ACLs, and a second Redis that speaks only TLS and knows sluice as an
ACL user limited to the commands it needs and to the project's keys.

Both listen beside the plain stack (which the test suite keeps using), on their own ports, with their
state under ``<state_dir>/secure``: the CA and server certificate (``sluice.stack.tls``), the broker's
PKCS12 keystore, generated passwords (``credentials.json``), and ``sluice.env``, the settings a sluice
process needs to use it as the ``sluice`` user. Every secret file is readable by its owner only.

Three users exist on both servers:

- ``admin``: the broker's own inter-broker user and a super user; on Redis, every command and key.
- ``sluice``: what sluice runs as. On Kafka it may read, write, create and describe topics and consumer
  groups (a deployment narrows the topic names to its own). On Redis, only the keys that end with the
  project's name (Feast's key layout) and only the commands in ``REDIS_COMMANDS``.
- ``intruder``: valid credentials and no grants, so that a denied ACL can be shown and tested.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from features.config import KafkaConfig, RedisConfig
from sluice.stack.services import (
    DEPLOY_LOCAL,
    StackError,
    format_kafka_storage,
    install_kafka_jars,
    kafka_answers,
    kafka_command,
    redis_answers,
)
from sluice.stack.tls import TlsFiles, make_certificates

__all__ = [
    "REDIS_COMMANDS",
    "SECURE_KAFKA_PORT",
    "SECURE_REDIS_PORT",
    "USERS",
    "SecureKafkaBroker",
    "SecureRedisServer",
    "SecureStack",
]

SECURE_KAFKA_PORT = 9094
"""The SASL_SSL listener; its controller listens (mutual TLS) on the next port."""
SECURE_REDIS_PORT = 6390
"""The TLS port; the secured Redis has no plain-text port."""
USERS = ("admin", "sluice", "intruder")

REDIS_COMMANDS = (
    "ping",  # health checks
    "info",  # the run id, to notice a Redis that restarted empty (online_store.resets)
    "hmget",  # reads, and the write script's newer-than check
    "hset",  # the write script
    "evalsha",
    "eval",
    "script|load",
    "exists",  # the reset watch's marker and rebuild lock
    "set",
)
"""What the ``sluice`` Redis user may run: nothing else (no FLUSHALL, KEYS, CONFIG or DEBUG)."""

_KAFKA_GRANTS = {
    # resource type: operations the sluice user is allowed on every resource of that type
    "TOPIC": ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"),
    "GROUP": ("READ", "DESCRIBE", "DELETE"),
}


@dataclass(frozen=True, kw_only=True)
class SecureStack:
    """The secured broker and Redis for ``project``, and the files a client needs to reach them."""

    state_dir: Path
    project: str

    @property
    def home(self) -> Path:
        return self.state_dir / "secure"

    @property
    def env_file(self) -> Path:
        return self.home / "sluice.env"

    @cached_property
    def tls(self) -> TlsFiles:
        return make_certificates(self.home / "tls")

    @cached_property
    def passwords(self) -> dict[str, str]:
        """Each user's password, made once (``credentials.json``, mode 0600) and then reused."""
        path = self.home / "credentials.json"
        if path.is_file():
            return dict(json.loads(path.read_text()))
        self.home.mkdir(parents=True, exist_ok=True)
        made = {user: secrets.token_urlsafe(24) for user in USERS}
        _write_secret(path, json.dumps(made, indent=2))
        return made

    def services(self) -> list[SecureKafkaBroker | SecureRedisServer]:
        return [SecureKafkaBroker(stack=self), SecureRedisServer(stack=self)]

    def kafka(self, user: str = "sluice", *, password: str | None = None) -> KafkaConfig:
        """The ``kafka`` settings of ``user`` (with another ``password``, to show a wrong one)."""
        return KafkaConfig(
            bootstrap_servers=f"127.0.0.1:{SECURE_KAFKA_PORT}",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=self.passwords[user] if password is None else password,
            ssl_cafile=str(self.tls.ca),
        )

    def redis(self, user: str = "sluice", *, password: str | None = None) -> RedisConfig:
        secret = self.passwords[user] if password is None else password
        return RedisConfig(
            url=f"rediss://{user}:{secret}@127.0.0.1:{SECURE_REDIS_PORT}/0", ssl_ca_certs=str(self.tls.ca)
        )

    def client_env(self, user: str = "sluice") -> dict[str, str]:
        """The ``SLUICE_*`` variables that point a sluice process at this stack as ``user``."""
        kafka, redis = self.kafka(user), self.redis(user)
        return {
            "SLUICE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "SLUICE_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
            "SLUICE_KAFKA_SASL_MECHANISM": str(kafka.sasl_mechanism),
            "SLUICE_KAFKA_SASL_USERNAME": user,
            "SLUICE_KAFKA_SASL_PASSWORD": self.passwords[user],
            "SLUICE_KAFKA_SSL_CAFILE": str(self.tls.ca),
            "SLUICE_REDIS_URL": redis.url,
            "SLUICE_REDIS_SSL_CA_CERTS": str(self.tls.ca),
        }

    def write_env_file(self) -> Path:
        """``sluice.env``: ``source`` it to run sluice against this stack as the ``sluice`` user."""
        lines = [f"export {name}={value}" for name, value in self.client_env().items()]
        _write_secret(self.env_file, "\n".join(lines) + "\n")
        return self.env_file

    def grant(self) -> None:
        """The sluice user's Kafka ACLs, and its Redis ACL for this project (both idempotent)."""
        from kafka.admin import (
            ACL,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            KafkaAdminClient,
            ResourcePattern,
            ResourceType,
        )

        wanted = [
            ACL(
                principal="User:sluice",
                host="*",
                operation=ACLOperation[operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(ResourceType[kind], "*", ACLResourcePatternType.LITERAL),
            )
            for kind, operations in _KAFKA_GRANTS.items()
            for operation in operations
        ]
        admin = KafkaAdminClient(**self.kafka("admin").client_kwargs())
        try:
            created = admin.create_acls(wanted)
        finally:
            admin.close()
        if created["failed"]:
            raise StackError(f"granting the sluice user's Kafka ACLs failed: {created['failed'][0]}")
        SecureRedisServer(stack=self).load_users()


@dataclass(frozen=True, kw_only=True)
class SecureKafkaBroker:
    """Apache Kafka (the plain broker's jars), SASL_SSL with SCRAM-SHA-512 users and ACLs."""

    stack: SecureStack
    name: str = "kafka-secure"
    heap: str = "384m"
    is_local: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{SECURE_KAFKA_PORT}"

    @property
    def home(self) -> Path:
        return self.stack.home / "kafka"

    @property
    def libs(self) -> Path:
        return self.stack.state_dir / "kafka" / "libs"

    @property
    def markers(self) -> tuple[str, ...]:
        return ("kafka.Kafka", str(self.home / "server.properties"))

    def check_prerequisites(self) -> None:
        missing = [tool for tool in ("java", "mvn", "openssl") if shutil.which(tool) is None]
        if missing:
            raise StackError(
                f"the secured Kafka broker needs {' and '.join(missing)}: "
                "apt-get install -y openjdk-17-jre-headless maven openssl"
            )

    def prepare(self) -> None:
        install_kafka_jars(self.libs)
        self.home.mkdir(parents=True, exist_ok=True)
        keystore, keystore_password = self.home / "broker.p12", self.stack.passwords["admin"]
        if not keystore.is_file():
            tls = self.stack.tls
            _run(
                "openssl", "pkcs12", "-export", "-in", str(tls.certificate), "-inkey", str(tls.key),
                "-certfile", str(tls.ca), "-name", "broker", "-out", str(keystore),
                "-passout", f"pass:{keystore_password}",
            )  # fmt: skip
            keystore.chmod(0o600)
        template = (DEPLOY_LOCAL / "kafka" / "server-secure.properties").read_text()
        for name, value in {
            "@LOG_DIRS@": str(self.home / "data"),
            "@CONTROLLER_PORT@": str(SECURE_KAFKA_PORT + 1),
            "@PORT@": str(SECURE_KAFKA_PORT),
            "@ADMIN_PASSWORD@": self.stack.passwords["admin"],
            "@KEYSTORE@": str(keystore),
            "@KEYSTORE_PASSWORD@": keystore_password,
            "@CA@": str(self.stack.tls.ca),
        }.items():
            template = template.replace(name, value)
        _write_secret(self.home / "server.properties", template)
        users = [
            argument
            for user, password in self.stack.passwords.items()
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
        ]
        properties = self.home / "server.properties"
        format_kafka_storage(self.libs, properties, data=self.home / "data", extra=tuple(users))

    def command(self) -> list[str]:
        return kafka_command(self.libs, self.home / "server.properties", heap=self.heap)

    def answers(self) -> bool:
        if not self.stack.tls.ca.is_file():
            return False
        return kafka_answers(self.stack.kafka("admin"))


@dataclass(frozen=True, kw_only=True)
class SecureRedisServer:
    """Debian's redis-server with TLS only and an ACL file: no default user, admin, and a limited sluice."""

    stack: SecureStack
    name: str = "redis-secure"
    is_local: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{SECURE_REDIS_PORT}"

    @property
    def home(self) -> Path:
        return self.stack.home / "redis"

    @property
    def markers(self) -> tuple[str, ...]:
        return ("redis-server", str(SECURE_REDIS_PORT))

    def check_prerequisites(self) -> None:
        if shutil.which("redis-server") is None:
            raise StackError("the secured Redis needs redis-server: apt-get install -y redis-server")

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_users()

    def command(self) -> list[str]:
        tls = self.stack.tls
        return [
            "redis-server", str(DEPLOY_LOCAL / "redis" / "redis.conf"),
            "--port", "0", "--tls-port", str(SECURE_REDIS_PORT),
            "--tls-cert-file", str(tls.certificate), "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            "--aclfile", str(self.home / "users.acl"), "--dir", str(self.home),
        ]  # fmt: skip

    def answers(self) -> bool:
        if not self.stack.tls.ca.is_file():
            return False
        return redis_answers(self.stack.redis("admin"))

    def load_users(self) -> None:
        """Rewrite the ACL file for the stack's project and have the running server load it."""
        import redis

        self._write_users()
        config = self.stack.redis("admin")
        client = redis.Redis.from_url(config.url, **config.client_kwargs())
        try:
            client.acl_load()
        except redis.RedisError as error:
            raise StackError(f"the secured Redis did not load its ACL file: {error}") from None
        finally:
            client.close()

    def _write_users(self) -> None:
        passwords = self.stack.passwords
        commands = " ".join(f"+{command}" for command in REDIS_COMMANDS)
        lines = [
            "user default off resetpass resetkeys -@all",
            f"user admin on >{passwords['admin']} ~* &* +@all",
            f"user sluice on >{passwords['sluice']} ~*{self.stack.project} resetchannels -@all {commands}",
            f"user intruder on >{passwords['intruder']} resetkeys resetchannels -@all +ping",
        ]
        _write_secret(self.home / "users.acl", "\n".join(lines) + "\n")


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file that only its owner can read, from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"{argv[0]} {argv[1]} failed: {done.stderr.strip()[-500:]}")
