//! Direction A handlers: we are a DIMSE SCP with a DICOMweb origin behind us.
