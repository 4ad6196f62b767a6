"""Everything a presafe Ray job runs: configs, data, templates, models, stages."""
