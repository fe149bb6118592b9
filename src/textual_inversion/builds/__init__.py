"""Offline builds of what the package ships: scripts run by its developers, never imported at run time."""
