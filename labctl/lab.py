"""Bring the native lab up and down, one service or all, and report its state."""

from __future__ import annotations

import time
from dataclasses import dataclass

from labctl import broker, health, ui
from labctl.config import LabConfig
from labctl.process import ProcessTable
from labctl.replicas import PortalReplica, replica_services
from labctl.services import SERVICE_CLASSES, Portal, Service, ServiceError

#: What `web` names when several replicas run: every one of them.
PORTAL_GROUP = Portal.name


def build(config: LabConfig) -> dict[str, Service]:
    """The lab's services by name, in start order.

    One portal: db, mosquitto, nodered, web. Several (PORTAL_REPLICAS above 1): db, mosquitto,
    nodered, redis, web-1 ... web-N, front.
    """
    if config.replicas == 1:
        services = [cls(config) for cls in SERVICE_CLASSES]
    else:
        services = [cls(config) for cls in SERVICE_CLASSES if cls is not Portal]
        services += replica_services(config)
    return {service.name: service for service in services}


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `./lab status`."""

    name: str
    running: bool
    pid: int | None
    port: int
    health: str  # "healthy", "stopped", or why it is unhealthy


class Lab:
    """The native run of one lab instance."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.services = build(config)
        self.table = ProcessTable(config.run_dir, config.logs_dir)

    def service(self, name: str) -> Service:
        """A service by name, with a clear error for an unknown one."""
        try:
            return self.services[name]
        except KeyError:
            raise ServiceError(self._unknown(name)) from None

    def named(self, name: str) -> list[Service]:
        """The services a name stands for: one, or with several replicas `web` for all of them."""
        if name == PORTAL_GROUP and self.replicas:
            return list(self.replicas)
        return [self.service(name)]

    def _unknown(self, name: str) -> str:
        known = ", ".join(self.services)
        if self.replicas:
            return f"unknown service {name!r}; the services are: {known} (and {PORTAL_GROUP}: every replica)"
        return (
            f"unknown service {name!r}; the services are: {known} (redis, web-1...web-N and front run "
            f"when PORTAL_REPLICAS in {self.config.env_file} is above 1)"
        )

    @property
    def replicas(self) -> list[PortalReplica]:
        """The portal replicas, in order; empty when a single portal runs."""
        return [service for service in self.services.values() if isinstance(service, PortalReplica)]

    def pid(self, service: Service) -> int | None:
        """The pid of a running service, or None."""
        return self.table.pid(service.name)

    # ------------------------------------------------------------ start and stop

    def _check_port_free(self, service: Service) -> None:
        if health.port_open(service.port):
            raise ServiceError(
                f"port {service.port} ({service.port_source}) is already in use by another program; "
                f"stop it or set another {service.port_variable} in {self.config.env_file}"
            )

    def start(self, name: str) -> bool:
        """Start a service (`web` with replicas: each) and wait until healthy; False if all ran."""
        started = [self._start(service) for service in self.named(name)]
        return any(started)

    def _start(self, service: Service) -> bool:
        if self.pid(service) is not None:
            return False
        self._check_port_free(service)
        with ui.step(f"{service.title} on {service.url()}", done="healthy") as step:
            step.note("preparing")
            if isinstance(service, PortalReplica) and not self._replica_running():
                # Once, before the first replica: concurrent migrations would wait on each other.
                step.note("database migrations")
                service.migrate()
            service.prepare()
            pid = self.table.start(service.spec())
            self._wait_healthy(service, pid, step)
            service.after_start()
        return True

    def _wait_healthy(self, service: Service, pid: int, step: ui.Step) -> None:
        deadline = time.monotonic() + service.start_timeout
        problem: str | None = "starting"
        while time.monotonic() < deadline:
            if self.table.exited_early(pid):
                raise ServiceError(f"{service.title} exited at start; {self._log_hint(service)}")
            problem = service.probe()
            if problem is None:
                return
            step.note(f"waiting: {problem}")
            time.sleep(0.2)
        waited = f"{service.start_timeout:.0f}s"
        hint = self._log_hint(service)
        raise ServiceError(f"{service.title} not healthy after {waited} ({problem}); {hint}")

    def _log_hint(self, service: Service) -> str:
        log = self.table.log_file(service.name)
        lines = log.read_text(errors="replace").strip().splitlines()[-6:] if log.exists() else []
        tail = "".join(f"\n    {line}" for line in lines)
        return f"see {log}{tail}"

    def _replica_running(self) -> bool:
        return any(self.pid(replica) is not None for replica in self.replicas)

    def stop(self, name: str) -> bool:
        """Stop a service (`web` with replicas: each, last first); False if none was running."""
        stopped = [self._stop(service) for service in reversed(self.named(name))]
        return any(stopped)

    def _stop(self, service: Service) -> bool:
        return self.table.stop(service.name, service.stop_signal)

    def restart(self, name: str) -> None:
        """Stop, then start, each service the name stands for, one after the other.

        Replicas go one at a time, so the front always has one to send browsers to. A migration
        the new code brings runs once, before the first replica starts again.
        """
        services = self.named(name)
        if len(services) > 1 and self._replica_running():
            with ui.step("database migrations", done="applied"):
                self.replicas[0].migrate()
        for service in services:
            with ui.step(f"stopping {service.title}", done="stopped") as step:
                if not self._stop(service):
                    step.result = "was not running"
            self._start(service)

    def up(self) -> list[str]:
        """Start every service that is not running, in order; returns those already running."""
        # Refuse before starting anything, rather than leave half a lab running.
        for service in self.services.values():
            if self.pid(service) is None:
                self._check_port_free(service)
        already = []
        for name, service in self.services.items():
            if not self._start(service):
                already.append(name)
        return already

    def down(self) -> list[str]:
        """Stop every service, in reverse order; returns the names that were running."""
        stopped = []
        for name in reversed(list(self.services)):
            with ui.step(f"stopping {self.services[name].title}", done="stopped") as step:
                if self._stop(self.services[name]):
                    stopped.append(name)
                else:
                    step.result = "not running"
        return stopped

    # ------------------------------------------------------------ state

    def status(self) -> list[ServiceStatus]:
        """Running or not, pid, port and health of every service."""
        rows = []
        for service in self.services.values():
            pid = self.pid(service)
            state = "stopped" if pid is None else service.probe() or "healthy"
            rows.append(ServiceStatus(service.name, pid is not None, pid, service.port, state))
        return rows

    def urls(self) -> list[tuple[str, str]]:
        """(what, where) lines printed after `./lab up`."""
        env = self.config.env
        device = env["LAB_DEVICE_ID"]
        mqtt = self.services["mosquitto"]
        portal = self.services["front"] if self.replicas else self.services[PORTAL_GROUP]
        lines = [
            ("Portal", f"{portal.url()}  (user {env['PORTAL_ADMIN_USER']})"),
            ("Node-RED", f"{self.services['nodered'].url()}  (user admin)"),
            ("MQTT", mqtt.url()),
            ("PostgreSQL", self.services["db"].url()),
            ("Demo device", f"user {device}, topics {env['TOPIC_ROOT']}/<room>/{device}/<attr>"),
            ("Credentials", str(self.config.env_file)),
            ("Logs", str(self.config.logs_dir)),
        ]
        if self.replicas:
            each = ", ".join(f"{replica.name} 127.0.0.1:{replica.port}" for replica in self.replicas)
            behind = f"{len(self.replicas)} portal processes behind HAProxy ({each})"
            lines.insert(1, ("Replicas", f"{behind}; Redis {self.services['redis'].url()}"))
        if not broker.tls_enabled(self.config.tls_dir):
            lines.append(("TLS", f"off (put server.crt and server.key in {self.config.tls_dir})"))
        return lines
