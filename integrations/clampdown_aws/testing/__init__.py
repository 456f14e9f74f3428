"""Test doubles for AWS: the seeded drill world and simulated AWS behaviours moto lacks.

Shipped (drills use them on a user's machine) but never imported by an action.
"""
