function layer = leakyReluLayer(varargin)
    % Test double of leakyReluLayer([scale], Name=Value...).
    args = varargin;
    if ~isempty(args) && isnumeric(args{1})
        args = [{'Scale'}, args];
    end
    layer = hcTestSetProps(nnet.cnn.layer.LeakyReLULayer(), args);
end
