"""Data: public-dataset converters into one datalist, and the (invertible) preprocessing the configs use."""
