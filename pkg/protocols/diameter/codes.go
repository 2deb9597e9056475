package diameter

// Application-Ids (RFC 6733 §2.4, RFC 4006 §1.3) and the freeDiameter test_app.
const (
	AppCommon        = 0          // Diameter common messages (base protocol)
	AppCreditControl = 4          // Diameter Credit-Control (RFC 4006)
	AppTest          = 16777215   // freeDiameter test_app (extensions/test_app/test_app.h)
	AppRelay         = 0xffffffff // advertised by relays: accepts every application (RFC 6733 §2.4)

	// VendorTest is the Vendor-Id of test_app's application and AVPs.
	VendorTest = 999999
)

// Command-Codes (RFC 6733 §3.1, RFC 4006 §3, test_app).
const (
	CmdCapabilitiesExchange = 257
	CmdDeviceWatchdog       = 280
	CmdDisconnectPeer       = 282
	CmdCreditControl        = 272
	CmdTest                 = 16777214
)

// AVP codes used by the gateway and the applications (RFC 6733 §4.5, RFC 4006 §8).
const (
	AVPSessionID                   = 263
	AVPOriginHost                  = 264
	AVPOriginRealm                 = 296
	AVPDestinationHost             = 293
	AVPDestinationRealm            = 283
	AVPHostIPAddress               = 257
	AVPAuthApplicationID           = 258
	AVPAcctApplicationID           = 259
	AVPVendorSpecificApplicationID = 260
	AVPSupportedVendorID           = 265
	AVPVendorID                    = 266
	AVPFirmwareRevision            = 267
	AVPResultCode                  = 268
	AVPProductName                 = 269
	AVPDisconnectCause             = 273
	AVPOriginStateID               = 278
	AVPFailedAVP                   = 279
	AVPErrorMessage                = 281
	AVPUserName                    = 1
	AVPExperimentalResult          = 297

	AVPCCRequestNumber      = 415
	AVPCCRequestType        = 416
	AVPCCTime               = 420
	AVPCCTotalOctets        = 421
	AVPGrantedServiceUnit   = 431
	AVPRequestedServiceUnit = 437
	AVPUsedServiceUnit      = 446
	AVPServiceContextID     = 461
	AVPMultipleServicesCC   = 456
	AVPValidityTime         = 448
	AVPCCInputOctets        = 412
	AVPCCOutputOctets       = 414
	// AVPTest is test_app's Test-AVP: vendor 999999, V flag only, Integer32.
	// freeDiameter 1.2.1 test_app.c sets its code to 0xffffff, the same
	// number as the application.
	AVPTest                  = 16777215
	disconnectCauseRebooting = 0 // Disconnect-Cause REBOOTING (RFC 6733 §5.4.3)
)

// Result-Code values (RFC 6733 §7.1, RFC 4006 §9).
const (
	ResultSuccess                = 2001
	ResultCommandUnsupported     = 3001
	ResultUnableToDeliver        = 3002
	ResultTooBusy                = 3004
	ResultApplicationUnsupported = 3007
	ResultInvalidHeaderBits      = 3008
	ResultUnknownPeer            = 3010
	ResultElectionLost           = 4003
	ResultAVPUnsupported         = 5001
	ResultUnknownSessionID       = 5002
	ResultInvalidAVPValue        = 5004
	ResultMissingAVP             = 5005
	ResultNoCommonApplication    = 5010
	ResultUnsupportedVersion     = 5011
	ResultUnableToComply         = 5012
	ResultInvalidAVPLength       = 5014
	ResultCreditLimitReached     = 4012
	ResultNoCommonSecurity       = 5017
	resultProtocolErrorFirst     = 3000
	resultProtocolErrorLast      = 3999
	defaultProductName           = "shardgate"
	defaultFirmwareRevision      = 1
)

// isProtocolError reports whether code is a 3xxx protocol error, the only
// class of answers that carries the E bit (RFC 6733 §7.1.3).
func isProtocolError(code uint32) bool {
	return code >= resultProtocolErrorFirst && code <= resultProtocolErrorLast
}
