"""Test doubles for Slack: a local stand-in for the Web API, Events and Socket Mode.

Shipped (drills use it on a user's machine) but never imported by the Slack integration.
"""
