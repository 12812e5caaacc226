"""ncbench: does neural collapse on train and held-out data predict test accuracy and robustness?"""

__version__ = "0.3.0"
