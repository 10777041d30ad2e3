"""infra/aws/fruits.yaml, read the way CloudFormation would deploy it, for the tests.

The template is the one source of the project's IAM policies: the `aws` fixture and the policy tests
take the Airflow policy and the instance profile's policy from it. Scope: the YAML short forms
(!Ref, !Sub, !GetAtt, !If, ...), and resolving the intrinsics the policy documents use: Ref of a
parameter or pseudo parameter, Sub, GetAtt <Role>.Arn / <Bucket>.Arn, Ref of a role or bucket. An
intrinsic outside that scope raises KeyError rather than resolving to something wrong.
"""

import copy
import functools
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "infra" / "aws" / "fruits.yaml"


class _Loader(yaml.SafeLoader):
    pass


def _short_form(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _short_form)


def load(path: Path = TEMPLATE) -> dict:
    """The template as data: a copy of one parse per file content (the policy tests read it hundreds of times)."""
    return copy.deepcopy(_parse(Path(path).read_text()))


@functools.cache
def _parse(text: str) -> dict:
    return yaml.load(text, Loader=_Loader)


class Stack:
    """The template with its parameters set: resolve(), policy(logical id)."""

    def __init__(
        self,
        bucket: str,
        account: str = "123456789012",
        region: str = "eu-west-1",
        partition: str = "aws",
        template: dict = None,
        **parameters,
    ):
        self.template = template or load()
        params = {name: spec.get("Default") for name, spec in self.template["Parameters"].items()}
        params.update(BucketName=bucket, **parameters)
        self.refs = {**params, "AWS::AccountId": account, "AWS::Region": region, "AWS::Partition": partition}
        self.resources = self.template["Resources"]

    def _ref(self, name: str) -> str:
        if name in self.refs:
            return self.refs[name]
        resource = self.resources[name]
        kind, props = resource["Type"], resource["Properties"]
        # What Ref returns, by type (CloudFormation's resource reference, "Return values"): a name.
        names = {
            "AWS::IAM::Role": ("RoleName",),
            "AWS::S3::Bucket": ("BucketName",),
            "AWS::IAM::InstanceProfile": ("InstanceProfileName",),
            "AWS::Athena::WorkGroup": ("Name",),
            "AWS::Glue::Database": ("DatabaseInput", "Name"),
        }
        for key in names[kind]:
            props = props[key]
        return self.resolve(props)

    def _get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        partition, account = self.refs["AWS::Partition"], self.refs["AWS::AccountId"]
        arns = {
            "AWS::IAM::Role": f"arn:{partition}:iam::{account}:role/{{}}",
            "AWS::IAM::InstanceProfile": f"arn:{partition}:iam::{account}:instance-profile/{{}}",
            "AWS::S3::Bucket": f"arn:{partition}:s3:::{{}}",
        }
        if attribute != "Arn":
            raise KeyError(f"{name}.{attribute}")
        return arns[kind].format(self._ref(name))

    def _sub(self, text: str) -> str:
        def one(match):
            name = match.group(1)
            return self._get_att(*name.split(".", 1)) if "." in name else self._ref(name)

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self._ref(value)
            if key == "Fn::GetAtt":
                return self._get_att(*value)
            if key == "Fn::Sub":
                if isinstance(value, list):
                    raise KeyError("Fn::Sub with variables")
                return self._sub(value)
            if key.startswith("Fn::"):
                raise KeyError(key)
        return {key: self.resolve(value) for key, value in node.items()}

    def policy(self, logical_id: str) -> dict:
        """The document of an AWS::IAM::ManagedPolicy, resolved."""
        return self.resolve(self.resources[logical_id]["Properties"]["PolicyDocument"])

    def documents(self) -> dict:
        """Every policy document of the template, resolved: {name: document}."""
        docs = {}
        for name, resource in self.resources.items():
            props = resource.get("Properties", {})
            if "PolicyDocument" in props:
                docs[name] = self.resolve(props["PolicyDocument"])
            if "AssumeRolePolicyDocument" in props:
                docs[f"{name}.AssumeRolePolicyDocument"] = self.resolve(props["AssumeRolePolicyDocument"])
            for inline in props.get("Policies", []):
                docs[f"{name}.{inline['PolicyName']}"] = self.resolve(inline["PolicyDocument"])
        return docs
