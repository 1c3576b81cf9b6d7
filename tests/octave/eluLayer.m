function layer = eluLayer(varargin)
    % Test double of eluLayer([alpha], Name=Value).
    args = varargin;
    if ~isempty(args) && isnumeric(args{1})
        args = [{'Alpha'}, args];
    end
    layer = hcTestSetProps(nnet.cnn.layer.ELULayer(), args);
end
