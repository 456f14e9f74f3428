"""AWS actions: containment (IAM, KMS, Secrets Manager, S3, SageMaker) and evidence.

Every action subclasses :class:`clampdown_aws.base.AwsAction`, which gives it
clients for the step's region and account, turns AccessDenied into a message
that names the missing IAM action and the principal, and routes rollback to the
action's ``undo``. boto3 honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``,
so the same code runs against moto server in drills and tests.
"""
