"""The gRPC descriptor set the server loads is the shipped .proto compiled, and it is the Open
Inference Protocol's service as tritonclient (someone else's copy of the protocol) knows it."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from rtdetr_edge.dev.grpc_proto import DESCRIPTOR_SET, compile_descriptor_set
from rtdetr_edge.server import oip_grpc


def test_the_shipped_descriptor_set_is_the_proto_compiled() -> None:
    assert DESCRIPTOR_SET.read_bytes() == compile_descriptor_set(), (
        "runtime/rtdetr_edge/server/proto/grpc_predict_v2.binpb is stale: run `make proto`"
    )


def _fields(message: descriptor_pb2.DescriptorProto) -> dict[str, tuple[int, int, int, str]]:
    return {field.name: (field.number, field.type, field.label, field.type_name.split(".")[-1]) for field in message.field}


def test_every_message_we_serve_has_tritons_field_numbers_and_types() -> None:
    from tritonclient.grpc import service_pb2

    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    ours = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file[0]
    assert ours.package == theirs.package == "inference"
    their_messages = {message.name: message for message in theirs.message_type}
    for message in ours.message_type:
        their = their_messages[message.name]
        # Triton may have more fields (it extends the protocol); every field we declare must match.
        their_fields = _fields(their)
        assert {name: their_fields.get(name) for name in _fields(message)} == _fields(message), message.name
        their_nested = {nested.name: nested for nested in their.nested_type}
        for nested in message.nested_type:
            nested_fields = _fields(their_nested[nested.name])
            assert {name: nested_fields.get(name) for name in _fields(nested)} == _fields(nested), nested.name
    their_methods = {m.name: (m.input_type, m.output_type) for m in theirs.service[0].method}
    (service,) = ours.service
    assert f"{ours.package}.{service.name}" == oip_grpc.SERVICE
    assert [m.name for m in service.method] == list(oip_grpc.METHODS)
    for method in service.method:
        assert their_methods[method.name] == (method.input_type, method.output_type), method.name
