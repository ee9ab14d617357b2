"""Generated gRPC/protobuf stubs (python -m photoveil.protogen)."""
