"""Every class the package registers for `.keras` loading has a registered name of its own."""

import importlib
import inspect
import pkgutil

import keras

import keras_mtl


def test_no_two_classes_share_a_registered_name():
    seen = {}
    for module_info in pkgutil.walk_packages(keras_mtl.__path__, "keras_mtl."):
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("keras_mtl."):
                continue
            name = keras.saving.get_registered_name(cls)
            if not name.startswith("keras_mtl>"):
                continue
            seen.setdefault(name, set()).add(f"{cls.__module__}.{cls.__qualname__}")
            # The name resolves back to this class (a second class under it would replace it).
            assert keras.saving.get_registered_object(name) is cls, (name, cls)
    assert len(seen) > 50 and all(len(classes) == 1 for classes in seen.values())
