"""How our EMR tasks read AWS's errors. botocore gives the code only inside ClientError.response."""

from botocore.exceptions import ClientError

S3_NOT_FOUND = ("NoSuchKey", "404")  # GetObject's and HeadObject's codes for a missing key
# ... and for a missing key when the caller may not list the bucket, or may not read the key (S3 API
# Reference, GetObject, "Permissions"): the two cannot be told apart.
S3_DENIED = ("AccessDenied", "403")


def aws_error_code(error: ClientError) -> str:
    """The error code of a botocore ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))
