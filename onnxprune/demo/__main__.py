"""python -m onnxprune.demo"""
import sys

from onnxprune.demo.story import main

sys.exit(main())
