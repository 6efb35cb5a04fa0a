"""A synthetic set, as a pipeline: write (:mod:`.writer`) -> judge (:mod:`.judge`, with its reference segmenter
:mod:`.reference`) -> verdict (:mod:`.verdict`); :mod:`.task` runs them for ``fetalgen-sample``."""
