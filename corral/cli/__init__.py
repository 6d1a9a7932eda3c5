"""The `corral` command line.

Each module in this package (other than `main` and private ones) is one subcommand: module
`foo_bar` becomes `corral foo-bar` and must define a click command or group named `cli`.
Modules are imported only when their subcommand runs, so `corral kv get` does not pay for
the update server's imports.
"""
