from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.cross import CrossNetwork
from keras_mtl.layers.custom import CustomBackbone
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import DSelectGate, Gate, MixtureGate
from keras_mtl.layers.home import HoME
from keras_mtl.layers.interaction import DotInteraction
from keras_mtl.layers.mlp import MLP
from keras_mtl.layers.mmoe import MMoE
from keras_mtl.layers.omoe import OMoE
from keras_mtl.layers.pepnet import GateNU, PEPNet
from keras_mtl.layers.ple import CGC, PLE
from keras_mtl.layers.shared_bottom import SharedBottom
from keras_mtl.layers.stem import STEM
from keras_mtl.layers.task_graph import AITM, DBMTL, TaskGraph

__all__ = ["AITM", "CGC", "DBMTL", "MLP", "PLE", "STEM", "Backbone", "CrossNetwork",
           "CustomBackbone", "DSelectGate", "DotInteraction", "ExpertBank", "Gate", "GateNU",
           "HoME", "MMoE", "MixtureGate", "OMoE", "PEPNet", "SharedBottom", "TaskGraph"]
