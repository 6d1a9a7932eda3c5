"""Unit-file syntax, names, specifiers and settings (systemd.syntax(7), systemd.unit(5))."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.units.config import (
    Defaults,
    KillMode,
    RestartPolicy,
    ServiceType,
    build_unit,
    expand_command,
    parse_env_file,
)
from corral.units.errors import BadSettingError, SpecifierError, UnitNameError, UnitSyntaxError
from corral.units.names import (
    Machine,
    SpecifierContext,
    UnitName,
    expand_specifiers,
    unit_escape,
    unit_unescape,
)
from corral.units.syntax import merge, parse_timespan, parse_unit_text, split_words

MACHINE = Machine(
    machine_id="a" * 32, boot_id="b" * 32, hostname="node1.example.com", root="/srv/m1"
)


def unit(text: str, name: str = "x.service", machine: Machine = MACHINE):
    return build_unit(name, parse_unit_text(text, name), machine)


def test_continuation_comments_and_no_inline_comments() -> None:
    text = (
        "[Section A]\nKeyOne=value 1\nKeyTwo=value 2\n\n# a comment\n\n[Section B]\n"
        'Setting="something" "some thing" "…"\nKeyTwo=value 2 \\\n'
        "       value 2 continued\n\n[Section C]\nKeyThree=value 3\\\n"
        "# this line is ignored\n; this line is ignored too\n       value 3 continued\n"
        "Inline=a # b\n"
    )
    parsed = parse_unit_text(text, "ex.conf")
    values = {(e.section, e.key): e.value for e in parsed.entries}
    assert values[("Section B", "KeyTwo")] == "value 2         value 2 continued"
    assert values[("Section C", "KeyThree")] == "value 3        value 3 continued"
    assert values[("Section C", "Inline")] == "a # b"
    assert [e.line for e in parsed.entries if e.key == "KeyThree"] == [13]
    assert any("unknown section [Section A]" in str(w) and ":1:" in str(w) for w in parsed.warnings)


def test_escaped_backslash_is_not_a_continuation() -> None:
    parsed = parse_unit_text("[Service]\nA=x\\\\\nB=y\n")
    assert [(e.key, e.value) for e in parsed.entries] == [("A", "x\\\\"), ("B", "y")]


def test_x_sections_are_silent_and_bad_lines_warn_with_line_numbers() -> None:
    parsed = parse_unit_text("[X-Fleet]\nMachineOf=a.service\n[Unit]\nno equals here\n", "u")
    assert [str(w) for w in parsed.warnings] == ["u:4: missing '=', ignoring line 'no equals here'"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[Unit]\nDescription=x\n[Service\nExecStart=/bin/true\n", 3),
        ("[Unit]\n[]\n", 2),
        ("\n\n[Ser]vice]\n", 3),
    ],
)
def test_broken_section_header_is_a_line_numbered_error(text: str, line: int) -> None:
    with pytest.raises(UnitSyntaxError) as info:
        parse_unit_text(text, "bad.service")
    assert info.value.line == line
    assert f"bad.service:{line}:" in str(info.value)


def test_quoting_and_escapes() -> None:
    assert split_words('a \'b c\' "d \\"e\\"" f\\x41 \\; ;') == [
        "a",
        "b c",
        'd "e"',
        "fA",
        "\\;",
        ";",
    ]
    assert split_words('x"y z"') == ['x"y', 'z"']  # quotes only count at word start
    with pytest.raises(BadSettingError):
        split_words("'unbalanced")
    with pytest.raises(BadSettingError):
        split_words("'a'b")


@pytest.mark.parametrize(
    ("span", "seconds"),
    [
        ("5", 5.0),
        ("2min 200ms", 120.2),
        ("55s500ms", 55.5),
        ("1h", 3600.0),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("3 us", 3e-6),
        ("infinity", None),
        ("1d 1s", 86401.0),
    ],
)
def test_timespans(span: str, seconds: float | None) -> None:
    assert parse_timespan(span) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("span", ["", "5 parsecs", "abc", "-1s"])
def test_bad_timespans(span: str) -> None:
    with pytest.raises(BadSettingError):
        parse_timespan(span)


def test_repeated_keys_accumulate_and_empty_assignment_resets() -> None:
    cfg = unit(
        "[Unit]\nAfter=a.service b.service\nAfter=\nAfter=c.service\nWants=d.service\n"
        "Wants=e.service\n[Service]\nExecStart=/bin/true\nEnvironment=A=1 B=2\n"
        "Environment=\nEnvironment=C=3\nExecStartPre=/bin/a\nExecStartPre=/bin/b\n"
        "Restart=always\nRestart=on-failure\n"
    )
    assert cfg.after == ("c.service",)
    assert cfg.wants == ("d.service", "e.service")
    assert cfg.service is not None
    assert cfg.service.environment == (("C", "3"),)
    assert [c.path for c in cfg.service.exec_start_pre] == ["/bin/a", "/bin/b"]
    assert cfg.service.restart is RestartPolicy.ON_FAILURE


def test_dropins_replace_exec_start() -> None:
    main = parse_unit_text("[Service]\nExecStart=/bin/old\nRestart=no\n", "/etc/x.service")
    dropin = parse_unit_text(
        "[Service]\nExecStart=\nExecStart=/bin/new --flag\n", "/etc/x.service.d/10.conf"
    )
    cfg = build_unit("x.service", merge(main, dropin), MACHINE)
    assert cfg.service is not None
    assert [(c.path, c.args) for c in cfg.service.exec_start] == [("/bin/new", ("--flag",))]


def test_exec_prefixes_and_separators() -> None:
    cfg = unit(
        "[Service]\nType=oneshot\nExecStart=-@/bin/sh mysh -c 'exit 3'\n"
        "ExecStart=:+/bin/echo $HOME ; !/bin/echo a\\;b\n"
    )
    assert cfg.service is not None
    a, b, c = cfg.service.exec_start
    assert (a.ignore_failure, a.argv0, a.path, a.args) == (
        True,
        "mysh",
        "/bin/sh",
        ("-c", "exit 3"),
    )
    assert (b.no_env_expansion, b.full_privileges, b.args) == (True, True, ("$HOME",))
    assert (c.ignore_user, c.args) == (True, ("a;b",))


def test_variable_expansion_in_commands() -> None:
    cfg = unit(
        "[Service]\nEnvironment=\"ONE=one\" 'TWO=two two'\n"
        "ExecStart=/bin/echo $ONE $TWO ${TWO} x${ONE}y $$ONE $UNSET\n"
    )
    assert cfg.service is not None
    env = dict(cfg.service.environment)
    argv = expand_command(cfg.service.exec_start[0], env)
    assert argv == ["/bin/echo", "one", "two", "two", "two two", "xoney", "$ONE"]


def test_type_defaults_and_bad_settings() -> None:
    assert unit("[Service]\nExecStart=/bin/true\n").service.type is ServiceType.SIMPLE  # type: ignore[union-attr]
    assert unit("[Service]\nExecStop=/bin/true\n").service.type is ServiceType.ONESHOT  # type: ignore[union-attr]
    with pytest.raises(BadSettingError, match="no ExecStart"):
        unit("[Service]\nType=simple\n")
    with pytest.raises(BadSettingError, match="more than one ExecStart"):
        unit("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n")
    with pytest.raises(BadSettingError) as info:
        unit("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\n")
    assert info.value.line == 4


def test_invalid_values_warn_with_lines_and_are_ignored() -> None:
    cfg = unit(
        "[Unit]\nBogus=1\n[Service]\nExecStart=/bin/true\nRestart=sometimes\n"
        "TimeoutStopSec=soon\nExecStartPre=relative/path\nEnvironment=1BAD=x\n"
        "ExecStartPost=/bin/echo %z\n"
    )
    text = "\n".join(str(w) for w in cfg.warnings)
    for line in (2, 5, 6, 7, 8, 9):
        assert f"x.service:{line}:" in text
    assert cfg.service is not None
    assert cfg.service.restart is RestartPolicy.NO
    assert cfg.service.timeout_stop == 90.0
    assert cfg.service.exec_start_post == ()


def test_timeouts_kill_and_exit_status_settings() -> None:
    cfg = build_unit(
        "x.service",
        parse_unit_text(
            "[Service]\nExecStart=/bin/true\nTimeoutSec=0\nKillMode=mixed\nKillSignal=SIGINT\n"
            "SuccessExitStatus=1 2 SIGKILL\nSuccessExitStatus=TEMPFAIL\nSendSIGKILL=off\n"
        ),
        MACHINE,
        Defaults(timeout_start=5),
    )
    s = cfg.service
    assert s is not None
    assert (s.timeout_start, s.timeout_stop) == (None, None)
    assert s.kill_mode is KillMode.MIXED and s.kill_signal == signal.SIGINT
    assert s.success_exit_status == frozenset({1, 2, 75})
    assert s.success_signals == frozenset({signal.SIGKILL})
    assert s.send_sigkill is False
    oneshot = unit("[Service]\nType=oneshot\nExecStart=/bin/true\n").service
    assert oneshot is not None and oneshot.timeout_start is None


def test_names_and_templates() -> None:
    n = UnitName.parse("web@8080.service")
    assert (n.prefix, n.instance, n.type, n.is_instance) == ("web", "8080", "service", True)
    assert n.template().name == "web@.service"
    assert UnitName.parse("web@.service").is_template
    assert UnitName.parse("a@b@c.service").instance == "b@c"
    for bad in ("", "noext", "x.bogus", "@x.service", "sp ace.service", "a" * 300 + ".service"):
        with pytest.raises(UnitNameError):
            UnitName.parse(bad)


def test_escaping_round_trip() -> None:
    assert unit_escape("/dev/sda") == "-dev-sda"
    assert unit_escape("a b.c") == "a\\x20b.c"
    assert unit_escape(".hidden") == "\\x2ehidden"
    assert unit_unescape("-dev-sda") == "/dev/sda"


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/-\x00"), max_size=30))
def test_escape_unescape_inverse(text: str) -> None:
    assert unit_unescape(unit_escape(text)) == text


def test_specifiers_resolve_per_machine() -> None:
    cfg = unit(
        "[Unit]\nDescription=%n %N %p %i %I %j %f %H %l %m %b %u %% %t\n"
        "[Service]\nExecStart=/bin/echo %i\n",
        name="my-app@a\\x2db.service",
    )
    assert cfg.description == (
        "my-app@a\\x2db.service my-app@a\\x2db my-app a\\x2db a-b app /a-b node1.example.com "
        f"node1 {'a' * 32} {'b' * 32} root % /srv/m1/run"
    )
    other = unit(
        "[Unit]\nDescription=%m on %H\n[Service]\nExecStart=/bin/true\n",
        machine=Machine(machine_id="c" * 32, hostname="node2"),
    )
    assert other.description == f"{'c' * 32} on node2"
    with pytest.raises(SpecifierError):
        expand_specifiers("%z", SpecifierContext(UnitName.parse("a.service"), MACHINE))


def test_environment_file_syntax() -> None:
    text = (
        "# comment\n; also\nA=1\nexport B = two words \nC='single $quoted'\n"
        'D="double \\"q\\""\nE=con\\\ntinued\nnot a line\n\nF=\n'
    )
    assert parse_env_file(text) == [
        ("A", "1"),
        ("B", "two words"),
        ("C", "single $quoted"),
        ("D", 'double "q"'),
        ("E", "continued"),
        ("F", ""),
    ]


# Real fleet-era unit files, from the fleet and CoreOS documentation.
FLEET_UNITS = {
    "hello.service": """[Unit]
Description=My Service
After=docker.service

[Service]
TimeoutStartSec=0
ExecStartPre=-/usr/bin/docker kill busybox1
ExecStartPre=-/usr/bin/docker rm busybox1
ExecStartPre=/usr/bin/docker pull busybox
ExecStart=/usr/bin/docker run --name busybox1 busybox /bin/sh -c "trap 'exit 0' INT TERM; while true; do echo Hello World; sleep 1; done"
""",
    "apache@.service": """[Unit]
Description=My Apache Frontend
After=docker.service
Requires=docker.service

[Service]
TimeoutStartSec=0
ExecStartPre=-/usr/bin/docker kill apache1
ExecStartPre=-/usr/bin/docker rm apache1
ExecStartPre=/usr/bin/docker pull coreos/apache
ExecStart=/usr/bin/docker run -rm --name apache1 -p 80:80 coreos/apache /usr/sbin/apache2ctl -D FOREGROUND
ExecStop=/usr/bin/docker stop apache1

[X-Fleet]
Conflicts=apache@*.service
""",
    "apache-discovery@.service": """[Unit]
Description=Announce Apache1
BindsTo=apache@%i.service
After=apache@%i.service

[Service]
ExecStart=/bin/sh -c "while true; do etcdctl set /services/website/apache1 '{ \\"host\\": \\"%H\\", \\"port\\": 80, \\"version\\": \\"52c7248a14\\" }' --ttl 60;sleep 45;done"
ExecStop=/usr/bin/etcdctl rm /services/website/apache1

[X-Fleet]
MachineOf=apache@%i.service
""",
    "etcd2.service.d/40-listen.conf": """[Service]
Environment=ETCD_NAME=%m
Environment="ETCD_ADVERTISE_CLIENT_URLS=http://${COREOS_PRIVATE_IPV4}:2379"
""",
    "docker-tcp.socket": """[Unit]
Description=Docker Socket for the API

[Socket]
ListenStream=2375
BindIPv6Only=both
Service=docker.service

[Install]
WantedBy=sockets.target
""",
}


def test_real_fleet_era_units_parse() -> None:
    hello = unit(FLEET_UNITS["hello.service"], "hello.service")
    assert hello.service is not None and hello.service.timeout_start is None
    assert [c.ignore_failure for c in hello.service.exec_start_pre] == [True, True, False]
    argv = expand_command(hello.service.exec_start[0], {})
    assert argv[-1] == "trap 'exit 0' INT TERM; while true; do echo Hello World; sleep 1; done"
    apache = unit(FLEET_UNITS["apache@.service"], "apache@1.service")
    assert apache.requires == ("docker.service",) and not apache.warnings
    sidekick = unit(FLEET_UNITS["apache-discovery@.service"], "apache-discovery@1.service")
    assert sidekick.binds_to == ("apache@1.service",)
    assert sidekick.after == ("apache@1.service",)
    assert sidekick.service is not None
    assert '"host": "node1.example.com"' in sidekick.service.exec_start[0].args[1]
    dropin = parse_unit_text(FLEET_UNITS["etcd2.service.d/40-listen.conf"])
    assert len(dropin.entries) == 2
    sock = unit(FLEET_UNITS["docker-tcp.socket"], "docker-tcp.socket")
    assert sock.service is None and sock.wanted_by == ("sockets.target",)


@given(st.text(max_size=400))
def test_parser_never_crashes(text: str) -> None:
    """Any text either parses, or fails with a line-numbered UnitSyntaxError."""
    try:
        parsed = parse_unit_text(text, "fuzz.service")
    except UnitSyntaxError as err:
        assert err.line >= 1
        return
    try:
        build_unit("fuzz.service", parsed, MACHINE)
    except BadSettingError:
        pass


@given(
    st.lists(
        st.sampled_from(
            [
                "[Unit]",
                "[Service]",
                "[X-Fleet]",
                "ExecStart=/bin/true",
                "ExecStart=",
                "Type=oneshot",
                "Environment=A=1 \\",
                "  B=2",
                "# c",
                "Restart=always",
                "After=a.service",
                "After=",
                "KillSignal=BOGUS",
                "ExecStart=-@/bin/x y z ; /bin/q",
                "Description=%i %n %Z",
                "junk",
                "TimeoutSec=1min 5s",
                "Environment='unterminated",
            ]
        ),
        max_size=25,
    )
)
def test_structured_fuzz_never_crashes(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        build_unit("f@1.service", parse_unit_text(text, "f@1.service"), MACHINE)
    except (UnitSyntaxError, BadSettingError):
        pass


COREOS_UNITS = {
    "fleet.service": """[Unit]
Description=fleet daemon

Wants=etcd.service
After=etcd.service

Wants=etcd2.service
After=etcd2.service

[Service]
Environment=GOMAXPROCS=1
ExecStart=/usr/bin/fleetd
Restart=always
RestartSec=10s

[Install]
WantedBy=multi-user.target
""",
    "etcd2.service": """[Unit]
Description=etcd2
Conflicts=etcd.service

[Service]
User=etcd
Type=notify
Environment=ETCD_DATA_DIR=/var/lib/etcd2
Environment=ETCD_NAME=%m
ExecStart=/usr/bin/etcd2
Restart=always
RestartSec=10s
LimitNOFILE=40000
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
""",
    "locksmithd.service": """[Unit]
Description=Cluster reboot manager
Requires=update-engine.service
After=update-engine.service
ConditionVirtualization=!container
ConditionPathExists=!/usr/.noupdate

[Service]
CPUShares=16
MemoryLimit=32M
PrivateDevices=true
Environment=GOMAXPROCS=1
EnvironmentFile=-/usr/share/coreos/update.conf
EnvironmentFile=-/etc/coreos/update.conf
ExecStart=/usr/lib/locksmith/locksmithd
Restart=on-failure
RestartSec=10s

[Install]
WantedBy=multi-user.target
""",
}


def test_coreos_system_units_parse() -> None:
    fleet = unit(COREOS_UNITS["fleet.service"], "fleet.service")
    assert fleet.wants == ("etcd.service", "etcd2.service")
    assert fleet.service is not None and fleet.service.restart_sec == 10.0
    assert fleet.wanted_by == ("multi-user.target",) and not fleet.warnings
    etcd = unit(COREOS_UNITS["etcd2.service"], "etcd2.service")
    assert etcd.service is not None
    assert etcd.service.type is ServiceType.NOTIFY and etcd.service.user == "etcd"
    assert ("ETCD_NAME", "a" * 32) in etcd.service.environment
    assert etcd.service.rlimits[0][1:] == (40000, 40000)
    lock = unit(COREOS_UNITS["locksmithd.service"], "locksmithd.service")
    assert lock.service is not None
    assert lock.service.environment_files == (
        ("/usr/share/coreos/update.conf", True),
        ("/etc/coreos/update.conf", True),
    )
    assert lock.conditions[0].negate and lock.conditions[0].kind == "PathExists"
    # cgroup settings and unsupported conditions are named, with their lines, and ignored
    warned = {w.line for w in lock.warnings}
    assert warned == {5, 9, 10, 11}
