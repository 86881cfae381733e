"""Generates the gRPC Python code from proto/ whenever the package is built or installed."""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithProto(build_py):
    """Runs grpc_tools.protoc before collecting the package's files."""

    def run(self) -> None:
        import runpy
        from pathlib import Path

        runpy.run_path(str(Path(__file__).parent / "proto" / "generate.py"), run_name="__main__")
        # Packages were discovered before the code existed: add serve.api.videogen.* so wheels carry it.
        from setuptools import find_packages

        self.packages = sorted({*(self.packages or []), *find_packages(include=["serve*", "parallel*"])})
        super().run()


setup(cmdclass={"build_py": BuildPyWithProto})
