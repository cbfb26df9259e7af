package sim

func (s *Server) stsOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"GetCallerIdentity": func(form) (any, *apiError) {
			return struct {
				UserID  string `xml:"UserId"`
				Account string `xml:"Account"`
				Arn     string `xml:"Arn"`
			}{"AIDASIMULATEDUSER0001", s.opts.AccountID, "arn:aws:iam::" + s.opts.AccountID + ":user/sim"}, nil
		},
	}
}
