"""Test doubles for AWS: the seeded drill world and simulated AWS behaviours moto lacks.

:mod:`~clampdown_aws.testing.seed` builds the world, :mod:`~clampdown_aws.testing.trail`
writes its CloudTrail and CloudWatch story, :mod:`~clampdown_aws.testing.simulated` is the
botocore hook (installed for a drill, removed after it). Shipped (drills use them on a
user's machine) but never imported by an action.
"""
