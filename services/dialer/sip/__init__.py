"""SIP third-party call control: the `sip` telephony backend of the dialer."""
