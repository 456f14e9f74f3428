"""The drill harness: simulated AWS and Slack on loopback, a scripted timeline of
alerts, clicks and injects against a real ``clampdown serve``, and the scored
after-action report.
"""
