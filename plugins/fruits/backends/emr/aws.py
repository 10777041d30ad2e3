"""How our EMR tasks read AWS's errors. botocore gives the code only inside ClientError.response."""

from botocore.exceptions import ClientError

S3_NOT_FOUND = ("NoSuchKey", "404")  # GetObject's and HeadObject's codes for a missing key


def aws_error_code(error: ClientError) -> str:
    """The error code of a botocore ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))
