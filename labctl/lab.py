"""Bring the native lab up and down, one service or all, and report its state."""

from __future__ import annotations

import time
from dataclasses import dataclass

from labctl import broker, health, ui
from labctl.config import LabConfig
from labctl.process import ProcessTable
from labctl.services import Service, ServiceError, build


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
            known = ", ".join(self.services)
            raise ServiceError(f"unknown service {name!r}; the services are: {known}") from None

    def pid(self, service: Service) -> int | None:
        """The pid of a running service, or None."""
        return self.table.pid(service.name)

    # ------------------------------------------------------------ start and stop

    def _check_port_free(self, service: Service) -> None:
        if health.port_open(service.port):
            raise ServiceError(
                f"port {service.port} ({service.port_variable}) is already in use by another program; "
                f"stop it or set another {service.port_variable} in {self.config.env_file}"
            )

    def start(self, name: str) -> bool:
        """Start one service and wait until it is healthy; False if it was already running."""
        service = self.service(name)
        if self.pid(service) is not None:
            return False
        self._check_port_free(service)
        with ui.step(f"{service.title} on {service.url()}", done="healthy") as step:
            step.note("preparing")
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

    def stop(self, name: str) -> bool:
        """Stop one service; False if it was not running."""
        service = self.service(name)
        return self.table.stop(service.name, service.stop_signal)

    def up(self) -> list[str]:
        """Start every service that is not running, in order; returns those already running."""
        # Refuse before starting anything, rather than leave half a lab running.
        for service in self.services.values():
            if self.pid(service) is None:
                self._check_port_free(service)
        already = []
        for name in self.services:
            if not self.start(name):
                already.append(name)
        return already

    def down(self) -> list[str]:
        """Stop every service, in reverse order; returns the names that were running."""
        stopped = []
        for name in reversed(list(self.services)):
            with ui.step(f"stopping {self.services[name].title}", done="stopped") as step:
                if self.stop(name):
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
        lines = [
            ("Portal", f"{self.services['web'].url()}  (user {env['PORTAL_ADMIN_USER']})"),
            ("Node-RED", f"{self.services['nodered'].url()}  (user admin)"),
            ("MQTT", mqtt.url()),
            ("PostgreSQL", self.services["db"].url()),
            ("Demo device", f"user {device}, topics {env['TOPIC_ROOT']}/<room>/{device}/<attr>"),
            ("Credentials", str(self.config.env_file)),
            ("Logs", str(self.config.logs_dir)),
        ]
        if not broker.tls_enabled(self.config.tls_dir):
            lines.append(("TLS", f"off (put server.crt and server.key in {self.config.tls_dir})"))
        return lines
